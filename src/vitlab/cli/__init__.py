"""What the commands share: the one wrapper (``command``), config validation, console output."""
