"""The bundle catalogue: declarative definitions, submission schemas and the pure functions over them."""
