"""The shopipe worker: turns segments in the bucket into handled events, once in effect."""
