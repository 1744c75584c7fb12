"""shopipe operator: follows the Sentinel master, scales workers on backlog, restarts stale pods."""
