"""Fixtures shared by the integration tests (the stack itself is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import closing

import pytest_asyncio
from shopipe.buffer import Buffer
from shopipe.config import CommonSettings, load_settings
from shopipe_devstack import Stack


@pytest_asyncio.fixture
async def bucket(stack: Stack) -> AsyncIterator[Buffer]:
    """The shared stack's segment bucket, closed after the test."""
    with closing(Buffer(load_settings(CommonSettings, stack.info.service_env()))) as b:
        yield b
