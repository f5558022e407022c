#!/bin/bash
log=/tmp/fig1/driver.log
which=after
cd /tmp/fig1/$which
echo "after-warm (kernel in the cache for this checkout): commit $(git rev-parse --short HEAD) start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $log
s=$(date +%s.%N)
PYTHONPATH=$PWD /usr/bin/time -v /work/venv/bin/python -m retune_suite.experiments.cli reproduce fig1 --preset paper --out /tmp/fig1/runs --name after-warm --quiet > /tmp/fig1/after-warm.out 2> /tmp/fig1/after-warm.err
rc=$?
e=$(date +%s.%N)
echo "after-warm: rc $rc end $(date -u +%FT%TZ) wall $(echo "$e - $s" | bc) s load $(cut -d' ' -f1-3 /proc/loadavg)" >> $log
echo done2 >> $log
