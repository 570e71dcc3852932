"""Entry point of the packaged app (``python <app folder>``), as the Holoscan packager expects."""

from app import main

if __name__ == "__main__":
    main()
