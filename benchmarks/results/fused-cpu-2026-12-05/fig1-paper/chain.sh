#!/bin/bash
# Fig. 1 at the paper preset, before (58823b8, the code before issue 28) then after (HEAD), back to back
log=/tmp/fig1/driver.log
for which in before after; do
  cd /tmp/fig1/$which
  echo "$which: commit $(git rev-parse --short HEAD) start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $log
  PYTHONPATH=$PWD /work/venv/bin/python -c "import retune_suite.operators as o, retune_suite.experiments as e; print('$which imports', o.__file__, e.__file__)" >> $log 2>&1
  s=$(date +%s.%N)
  PYTHONPATH=$PWD /usr/bin/time -v /work/venv/bin/python -m retune_suite.experiments.cli reproduce fig1 --preset paper --out /tmp/fig1/runs --name $which --quiet > /tmp/fig1/$which.out 2> /tmp/fig1/$which.err
  rc=$?
  e=$(date +%s.%N)
  echo "$which: rc $rc end $(date -u +%FT%TZ) wall $(echo "$e - $s" | bc) s load $(cut -d' ' -f1-3 /proc/loadavg)" >> $log
done
echo done >> $log
