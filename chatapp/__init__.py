"""chatapp: chat, offline, with a GPT trained from scratch."""

__version__ = "0.1.0"

# exit codes of every entry point (chatapp.launch, chatapp.cli)
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # Ctrl+C, as a shell reports SIGINT
