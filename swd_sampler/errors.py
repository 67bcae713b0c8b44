"""The base of the pack's own error types: every input the pack refuses raises a subclass of SwDError, whose
message names the input (or file) and the fix. A ValueError, so that callers that catch ValueError still work."""


class SwDError(ValueError):
    """An input (a schedule, a LoRA file, a latent, a number) that the pack refuses; the message says how to fix it."""
