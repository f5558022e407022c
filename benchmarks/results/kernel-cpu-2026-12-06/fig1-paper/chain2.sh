#!/bin/bash
# Second round (the first before run overlapped 20 s of another timing script): before (5c397e0: the kernel block by block) then after (the
# working tree of this change: registers, T blocks in one pass, the chunked VJP), back to back
log=/tmp/fig1k/driver.log
for which in before2 after2; do
  if [ $which = before2 ]; then dir=/tmp/w/old5c; else dir=/work/main; fi
  cd $dir
  echo "$which: commit $(git rev-parse --short HEAD) (after: plus the uncommitted change) start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $log
  PYTHONPATH=$PWD /work/venv/bin/python -c "import retune_suite.operators as o; print('$which imports', o.__file__)" >> $log 2>&1
  s=$(date +%s.%N)
  PYTHONPATH=$PWD /usr/bin/time -v /work/venv/bin/python -m retune_suite.experiments.cli reproduce fig1 --preset paper --out /tmp/fig1k/runs --name $which --quiet > /tmp/fig1k/$which.out 2> /tmp/fig1k/$which.err
  rc=$?
  e=$(date +%s.%N)
  echo "$which: rc $rc end $(date -u +%FT%TZ) wall $(echo "$e - $s" | bc) s load $(cut -d' ' -f1-3 /proc/loadavg)" >> $log
done
echo done >> $log
