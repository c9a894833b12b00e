"""Pure logic: no trio, no I/O, no clock."""
