"""The reports training/ writes and service/ reads: each one's shape, JSON and terminal view."""
