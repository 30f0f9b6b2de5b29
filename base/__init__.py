"""The shared base every other package stands on: errors, paths, processes, units, the run config, wire
types and the model. It imports no other package of the project."""
