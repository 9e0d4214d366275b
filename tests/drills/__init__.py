"""The fault drills: the whole service as real OS processes, one fault at a time.

Each drill loads both cores with a stack of processes and checks answers against deadlines,
so they all run in one xdist group (`DRILLS`): one pytest worker runs them one after
another while the other runs the rest of the suite.
"""

DRILLS = "drills"
