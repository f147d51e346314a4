"""The fuzz campaign: a seeded mutator over the real inputs, and the command that runs it."""
