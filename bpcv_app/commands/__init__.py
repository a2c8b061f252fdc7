"""One module per command group; each has ``register(sub)``, which adds its sub-commands to the parser.
Heavy modules (TensorFlow, the agent, the coordinator) load inside the command functions only."""
