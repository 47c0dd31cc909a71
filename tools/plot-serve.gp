# Plot `ringserve-bench tenants`' data file: throughput per admission policy against the
# engine run directly, and each tenant's p99 time to first token per policy.
#
#   gnuplot -e "datafile='build/serve-policies.dat'; outfile='docs/serve-policies.png'" \
#       tools/plot-serve.gp
#
# The data file: a header row (policy, requests_per_s, tokens_per_s, hit_ratio,
# direct_requests_per_s, requests_per_s_worst, requests_per_s_best, direct_best, then one
# column per tenant: its p99 time to first token in ms), then one row per policy.
# Throughputs are medians of the bench's rounds; the error bars span its worst and best.

if (!exists("datafile")) datafile = 'build/serve-policies.dat'
if (!exists("outfile")) outfile = 'build/serve-policies.png'

set terminal pngcairo size 1280,520 font ",11"
set output outfile

stats datafile using 5 nooutput
direct = STATS_max
policies = STATS_records
stats datafile using 7 nooutput
highest = STATS_max
stats datafile using 8 nooutput
highest = STATS_max > highest ? STATS_max : highest
columns = STATS_columns
first_tenant = 9

set multiplot layout 1,2 title "ringserve-bench tenants: stories15M-shaped model, CPU backend"

# Left: requests/s per policy (median of the rounds, bars from the worst to the best
# round); the dashed line is the engine directly, every prefix cached (median).
set title "throughput, median of rounds (label: requests/s, prefix-cache hit ratio)"
set ylabel "completed requests/s"
set yrange [0:highest * 1.15]
set style fill solid 0.6 border -1
set boxwidth 0.6
set xrange [-0.6:policies - 0.1]
set grid ytics
set key top left
set arrow 1 from graph 0, first direct to graph 1, first direct nohead dt 2 lw 2 lc rgb "#444444"
set label 1 sprintf("engine directly, every prefix cached: %.0f", direct) at graph 0.98, first direct offset 0,0.8 right
plot datafile using 0:2:xtic(1) skip 1 with boxes lc rgb "#4477aa" notitle, \
     '' using 0:2:6:7 skip 1 with yerrorbars lc rgb "#222222" pt 0 notitle, \
     '' using ($0 + 0.32):2:(sprintf("%.0f, %.0f%%", $2, 100 * $4)) skip 1 with labels left offset 0,0.6 notitle
unset arrow 1
unset label 1

# Right: p99 time to first token per tenant, clustered by policy, log scale.
set title "p99 time to first token per tenant"
set ylabel "ms (log scale)"
set logscale y
set yrange [10:*]
set xrange [*:*]
set style data histogram
set style histogram clustered gap 1
set boxwidth 0.9 relative
set key below horizontal autotitle columnheader
plot for [i=first_tenant:columns] datafile using i:xtic(1) title columnheader(i)

unset multiplot
