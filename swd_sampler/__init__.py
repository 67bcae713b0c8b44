"""Scale-wise Distillation (SwD) sampling core: pure torch, no ComfyUI import."""
