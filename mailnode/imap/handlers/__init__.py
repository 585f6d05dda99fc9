"""Extension commands and arguments, each in its own module; the session and parser call
into them through small hooks so that core code stays short."""
