"""A script that asks its user a question when imported."""

EPOCHS = int(input("epochs? "))


def make(channels):  # never reached
    raise AssertionError
