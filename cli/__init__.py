"""The command line on top of the pipeline: parsing, the commands, and the one place exceptions become exit codes.

============================  ===============================================================
module                        what it is
============================  ===============================================================
``main``                      the commands: run (offline, local, remote, agent), import-offline,
                              step-code, register-data, predict
``parser``                    the run's flags (one per pipeline parameter) and their checks
``startup``                   which command, with what: everything decided before ClearML starts
``register_command``          ``register-data``'s flags
``predict_command``           ``predict`` (ClearML-free)
``repository``                the git URL and commit agents clone
``errors``                    exceptions -> one line and an exit code
============================  ===============================================================

ClearML is never imported at the top of these modules: the command line is parsed before ClearML
starts (importing ClearML patches argparse and would record the flags as the run's ``Args``).
"""
