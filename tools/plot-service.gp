# Plot ringserve-sim's --service-log from `compare` (one block per admission policy:
# fcfs, lpm, vtc, dlpm; columns: time, then each tenant's weighted service): the spread
# between the most and the least served of four tenants over virtual time, while all are
# backlogged (the plot's time range: before the first tenant's queue empties).
#
#   gnuplot -e "datafile='build/sim-policies/service.log'; outfile='docs/sim-service.png'; \
#       tmax=800; vtc_bound=9344; dlpm_bound=13440" tools/plot-service.gp
#
# vtc_bound, dlpm_bound (optional): docs/scheduling.md's bounds for the run's parameters,
# drawn as dashed lines.

if (!exists("datafile")) datafile = 'build/sim-policies/service.log'
if (!exists("outfile")) outfile = 'build/sim-policies/service.png'
if (!exists("tmax")) tmax = 800

max2(a, b) = a > b ? a : b
min2(a, b) = a < b ? a : b
spread(a, b, c, d) = max2(max2(a, b), max2(c, d)) - min2(min2(a, b), min2(c, d))

set terminal pngcairo size 1000,480 font ",11"
set output outfile
set title "ringserve-sim: weighted service, most served tenant minus least served (4 tenants, all backlogged)"
set xlabel "virtual time (s)"
set ylabel "service difference (weighted tokens)"
set logscale y
set xrange [0:tmax]
set grid
set key top left
if (exists("vtc_bound")) set arrow from 0,vtc_bound to tmax,vtc_bound nohead dashtype 2 lc rgb "#56b4e9"
if (exists("vtc_bound")) set label "vtc bound" at tmax*0.82,vtc_bound*0.75 tc rgb "#56b4e9"
if (exists("dlpm_bound")) set arrow from 0,dlpm_bound to tmax,dlpm_bound nohead dashtype 2 lc rgb "#e69f00"
if (exists("dlpm_bound")) set label "dlpm bound" at tmax*0.82,dlpm_bound*1.25 tc rgb "#e69f00"
plot for [i=0:3] datafile index i using 1:(spread($2, $3, $4, $5)) with lines lw 2 \
     title word("fcfs lpm vtc dlpm", i + 1)
