"""Pure logic: rules, features, assignment, switch policy, statistics. No trio, no I/O, no clock."""
