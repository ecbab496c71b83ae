"""Differential harness: the same packet sequences through the kernel's conntrack and fwd's.

kernel.py  a router namespace whose FORWARD chain uses nf_conntrack with fwd's policy; it
           reports, per packet, dropped or forwarded with the state the kernel gave it
sequences.py  named scenarios (the coverage list of issue 11) and seeded random sequences
run.py     drives both sides, compares packet by packet, groups disagreements by cause;
           `python -m tests.differential.run --random 10000` is the long run (make differential)
"""
