"""python -m swd_distill {teacher,student,eval} ...: see cli.py."""
from .cli import main

main()
