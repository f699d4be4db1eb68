"""The projector runtime: the loop that applies each batch exactly once, blue/green
generations, the runner that leads, and its lease."""
