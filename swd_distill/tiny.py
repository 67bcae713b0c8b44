"""Moved to swd_sampler/tiny.py (the nodes need it without the trainer); this re-export goes once nothing uses it."""
from swd_sampler.tiny import *  # noqa: F403
from swd_sampler.tiny import MMDIT, NATIVE_LATENT, STUDENT_FILE, TEACHER_FILE, TINY_PRESET  # noqa: F401
