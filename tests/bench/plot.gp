# tests/bench/plot.gp — bench/results/results.png from results.dat (written by bench.py):
# rows "index label msgs_per_s rss_mib"; left panel throughput, right panel steady RSS.
set terminal pngcairo size 1100,450 font "sans,10" noenhanced
set output outfile
set multiplot layout 1,2 title "tidegate benchmark (".title.")"
set style fill solid 0.8 border -1
set boxwidth 0.6
set grid ytics
set yrange [0:*]
set xtics rotate by 0
unset key
set title "throughput, msg/s (median, log scale)"
set logscale y
set yrange [1000:*]
plot datafile using 1:3:xtic(2) with boxes lc rgb "#3070b0", \
     '' using 1:3:(sprintf("%.0f", $3)) with labels offset 0,0.8
unset logscale y
set yrange [0:*]
set title "steady RSS under load, MiB (median)"
plot datafile using 1:($4):xtic(2) with boxes lc rgb "#b05030", \
     '' using 1:($4):(sprintf("%.1f", $4)) with labels offset 0,0.8
unset multiplot
