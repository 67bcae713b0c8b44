"""python -m swd_distill {teacher,samples,distill,eval} ...: see cli.py."""
from .cli import main

main()
