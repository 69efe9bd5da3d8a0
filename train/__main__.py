"""`python -m swrr.train`: the same command as swrr-train."""
from swrr.entry import train as main  # passive OpenMP waiting first, then .cli

if __name__ == "__main__":
    main()
