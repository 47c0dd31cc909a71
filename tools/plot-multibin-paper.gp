# Plot tools/sim-multibin-paper.py's data file: throughput against the paper's closed
# form, and the latency side of the trade-off, against the number of bins k.
#
#   gnuplot -e "datafile='build/multibin-paper/multibin-paper.dat'; \
#       outfile='docs/multibin-paper.png'" tools/plot-multibin-paper.gp
#
# Columns: k, simulated requests/step, closed form, mean latency (all at once), mean and
# p99 latency (Poisson at 90% of k = 1's capacity), latencies in steps.

if (!exists("datafile")) datafile = 'build/multibin-paper/multibin-paper.dat'
if (!exists("outfile")) outfile = 'build/multibin-paper/multibin-paper.png'

set terminal pngcairo size 1100,460 font ",11"
set output outfile
set multiplot layout 1,2 title "ringserve-sim, the multi-bin paper's setting: B = 128, outputs uniform on [100, 2000] steps, one unit per step"
set logscale x 2
set xrange [0.8:40]
set xtics (1, 2, 4, 8, 16, 32)
set xlabel "bins k"
set grid ytics
set key bottom right

set title "throughput (all requests at once)"
set ylabel "requests per step"
plot datafile using 1:3 with lines dashtype 2 lw 2 lc rgb "gray40" title "closed form", \
     datafile using 1:2 with linespoints pt 7 lw 2 lc rgb "#0072b2" title "simulated"

set title "latency (log scale)"
set ylabel "latency (steps)"
set logscale y
set key at graph 0.98, graph 0.82 right top
plot datafile using 1:4 with linespoints pt 7 lw 2 lc rgb "#0072b2" title "all at once, mean", \
     datafile using 1:5 with linespoints pt 5 lw 2 lc rgb "#d55e00" title "Poisson (90% of k = 1), mean", \
     datafile using 1:6 with linespoints pt 4 lw 1 dashtype 2 lc rgb "#d55e00" title "Poisson, p99"
unset multiplot
