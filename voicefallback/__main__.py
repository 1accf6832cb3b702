"""`python -m voicefallback`."""

from voicefallback.cli import main

main()
