"""The sub-commands of ``inceptorch``, in groups: each module's ``add_*`` functions declare a
command's arguments and the function that runs it; ``cli`` assembles the parser."""
