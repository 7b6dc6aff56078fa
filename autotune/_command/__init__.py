"""What the `autotune` command does once its arguments are parsed, and running
answers for real."""
