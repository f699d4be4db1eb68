"""Pure tests: no server, no file, no socket; the whole tier runs in seconds."""
