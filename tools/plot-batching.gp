# Plot tools/bench-batching.sh's data file: each configuration's throughput relative to
# k = 1 static bins of the same round, against the batch size.
#
#   gnuplot -e "datafile='build/batching/batching.dat'; outfile='docs/batching.png'" \
#       tools/plot-batching.gp
#
# The data file (ringserve-bench batching --data): a comment naming the configurations,
# then one row per batch size: B, then per configuration the median, lowest and highest
# of its per-round ratios to k = 1 static (configuration 0, whose ratio is 1).

if (!exists("datafile")) datafile = 'build/batching/batching.dat'
if (!exists("outfile")) outfile = 'build/batching/batching.png'

set terminal pngcairo size 1100,560 font ",11"
set output outfile
set title "ringserve-bench batching: CPU engine, stories15M-shaped f32 model, all requests at once\n(median of alternated rounds; bars: lowest to highest round)"
set xlabel "batch size B (requests per batch)"
set ylabel "throughput / throughput of k = 1 static (same round)"
set logscale x 2
set xrange [3:40]
set xtics (4, 8, 16, 32)
set grid ytics
set key outside right top
set arrow from 3,1 to 40,1 nohead dashtype 2 lc rgb "gray40"
set arrow from 3,1.3 to 40,1.3 nohead dashtype 3 lc rgb "gray60"
set label "target for k = 4 (1.3x)" at 3.2,1.33 tc rgb "gray40"

names = "'static, k = 2' 'static, k = 4' 'static, k = 8' 'continuous lanes, k = 4' 'continuous batching, no bins' 'static, k = 2, predicted' 'static, k = 4, predicted' 'static, k = 8, predicted'"
# Configuration c (1 .. 8) has its median in column 2 + 3c; a small shift keeps the bars
# apart.
plot for [c=1:5] datafile using ($1 * (1 + (c - 4.5) * 0.012)):(column(2 + 3 * c)):(column(3 + 3 * c)):(column(4 + 3 * c)) \
	with yerrorlines lw 2 pt 7 title word(names, c), \
     for [c=6:8] datafile using ($1 * (1 + (c - 4.5) * 0.012)):(column(2 + 3 * c)):(column(3 + 3 * c)):(column(4 + 3 * c)) \
	with yerrorlines lw 2 pt 6 dashtype 2 title word(names, c)
