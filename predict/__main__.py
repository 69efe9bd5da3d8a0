"""`python -m swrr.predict`: the same command as swrr-predict."""
from .cli import main

if __name__ == "__main__":
    main()
