"""Small helpers shared by the library: atomic file output, logging, seeding."""
