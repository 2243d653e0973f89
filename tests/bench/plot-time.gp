# tests/bench/plot-time.gp — bench/results/results-time.png from the time series bench.py
# writes (columns in each file's header line). run.sh passes the files that exist:
#   satfile   time-saturation.dat  t broker_rss tidegate_rss unacked      (issue 18)
#   satceil   time-saturation-ceiling.dat  t broker_rss  (same load, counting subscriber)
#   soakfile  time-soak.dat        t tidegate_rss disk wal                 (issue 21, normal operation)
#   deadfile  time-dead.dat        t disk wal cap wal_bound dropped        (issue 21, outage)
# A row that did not run gets an empty panel that says so, so a partial run cannot be
# mistaken for a full one.
set terminal pngcairo size 1500,450 font "sans,10" noenhanced
set output outfile
set multiplot layout 1,3 title "tidegate benchmark over time (".title.")"
set grid
# the keys sit top left, above the data: autoscaling leaves the top 35 % of y free, and
# the right axes get the same room from their maximum (offsets act on y1 only)
set key top left Left reverse samplen 2
set offsets graph 0, graph 0, graph 0.35, graph 0
set xlabel "seconds since the load started"

set title "saturation: RSS (MiB) and unacknowledged messages"
if (exists("satfile")) {
	set ylabel "RSS, MiB"
	set yrange [0:*]
	set y2label "tidegate_broker_unacked"
	stats satfile using 4 nooutput
	set y2range [0:(STATS_max > 0 ? STATS_max : 1) * 1.55]
	set y2tics
	# the same load's broker feeding the counting subscriber (the ceiling run), when it ran
	ceil = exists("satceil") ? sprintf(", '%s' using 1:2 with lines lw 1 dt 2 lc rgb '#b05030' title 'mosquitto RSS, to the counting subscriber'", satceil) : ""
	eval("plot satfile using 1:2 with lines lw 2 lc rgb '#b05030' title 'mosquitto RSS', " . \
	     "'' using 1:3 with lines lw 2 lc rgb '#3070b0' title 'tidegate RSS', " . \
	     "'' using 1:4 axes x1y2 with points pt 7 ps 0.4 lc rgb '#808080' title 'unacked (right)'" . ceil)
	unset y2tics
	unset y2label
} else {
	unset ylabel
	set label 1 "saturation not run" at graph 0.5, 0.5 center
	plot [0:1][0:1] NaN notitle
	unset label 1
}

set title "soak at half the ceiling: RSS and outbox on disk"
if (exists("soakfile")) {
	set ylabel "tidegate RSS, MiB"
	set yrange [0:*]
	set y2label "outbox files, MiB"
	stats soakfile using 3 nooutput
	set y2range [0:(STATS_max > 0 ? STATS_max : 1) * 1.55]
	set y2tics
	plot soakfile using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc rgb "#3070b0" title "tidegate RSS", \
	     '' using 1:3 axes x1y2 with lines lw 2 lc rgb "#30a050" title "db + WAL + shm (right)", \
	     '' using 1:4 axes x1y2 with lines lw 1 dt 2 lc rgb "#30a050" title "WAL (right)"
	unset y2tics
	unset y2label
} else {
	unset ylabel
	set label 1 "soak not run" at graph 0.5, 0.5 center
	plot [0:1][0:1] NaN notitle
	unset label 1
}

set title "dead sink: outbox on disk against max_bytes"
if (exists("deadfile")) {
	set ylabel "MiB"
	set yrange [0:*]
	plot deadfile using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc rgb "#30a050" title "db + WAL + shm", \
	     '' using 1:3 with lines lw 1 lc rgb "#806020" title "WAL", \
	     '' using 1:4 with lines lw 2 dt 2 lc rgb "#c02020" title "max_bytes (cap)", \
	     '' using 1:5 with lines lw 1 dt 3 lc rgb "#806020" title "WAL bound"
} else {
	unset ylabel
	set label 1 "dead sink not run" at graph 0.5, 0.5 center
	plot [0:1][0:1] NaN notitle
	unset label 1
}
unset multiplot
