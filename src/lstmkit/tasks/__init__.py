"""Data and problems: datasets that ship with installed packages, and generated tasks."""
