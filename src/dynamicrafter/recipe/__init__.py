"""The project's own small DynamiCrafter: its configuration, the training recipe and the evaluation report."""
