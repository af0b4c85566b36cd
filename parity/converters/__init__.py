"""Ports written by converters: a converter's output judged as a hand port is
(``parity check MODULE --convert nobuco``)."""
