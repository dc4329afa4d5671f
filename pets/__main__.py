from pets.cli import _entry

_entry()
