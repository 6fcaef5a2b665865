"""Modal screens: confirmations, help, halt flags, job launch forms."""
