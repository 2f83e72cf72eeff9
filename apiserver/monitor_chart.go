package apiserver

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// lineChart is a chart of the monitoring pages laid out for the template:
// one polyline per series and gap (a missing sample breaks the line),
// the y axis from 0 to a round top, the x axis every 15 minutes.
type lineChart struct {
	ID, Title     string
	Width, Height int
	PlotX, PlotY  int
	PlotW, PlotH  int
	PlotBottom    int
	YTicks        []chartTick
	XTicks        []chartXTick
	Lines         []chartLine
	Empty         bool // no sample at all
	Cut           int  // series left out (more than monitorMaxSeries)
}

type chartXTick struct {
	X     int
	Label string
}

type chartLine struct {
	Name, Color string
	Paths       []string // "x,y x,y …" per unbroken stretch
	Dots        []chartDot
	Last        string // the latest value, formatted ("—": none)
}

// chartDot marks a sample with no neighbour, which a polyline cannot show.
type chartDot struct{ X, Y int }

const xTickEvery = 15 * time.Minute

// niceCeilFloat rounds v up to 1, 2 or 5 times a power of ten (1 for v ≤ 0).
func niceCeilFloat(v float64) float64 {
	if !(v > 0) || math.IsInf(v, 1) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v*(1-1e-12) {
			return m * p
		}
	}
	return 10 * p
}

// formatValue writes v in unit for axis labels and legends.
func formatValue(u chartUnit, v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	short := func(v float64) string { return strconv.FormatFloat(v, 'g', 3, 64) }
	switch u {
	case unitBytes:
		return FormatBytes(int64(v))
	case unitSeconds:
		if v < 1 {
			return short(v*1000) + " ms"
		}
		return short(v) + " s"
	case unitRate:
		return short(v) + " req/s"
	}
	return short(v)
}

// buildLineChart lays out ss (at most monitorMaxSeries of them) over the
// window ending at end.
func buildLineChart(sp chartSpec, ss []series, end time.Time) lineChart {
	ch := lineChart{ID: "chart-" + sp.ID, Title: sp.Title, Width: chartW, Height: chartH,
		PlotX: plotLeft, PlotY: plotTop, PlotW: plotW, PlotH: plotH, PlotBottom: plotTop + plotH}
	if len(ss) > monitorMaxSeries {
		ch.Cut = len(ss) - monitorMaxSeries
		ss = ss[:monitorMaxSeries]
	}
	start := end.Add(-monitorWindow)
	peak, seen := 0.0, false
	for _, s := range ss {
		for _, v := range s.Values {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				peak, seen = max(peak, v), true
			}
		}
	}
	ch.Empty = !seen
	top := niceCeilFloat(peak)
	for k := 0; k <= 4; k++ {
		v := top * float64(k) / 4
		ch.YTicks = append(ch.YTicks, chartTick{Y: plotTop + plotH - int(math.Round(v/top*plotH)), Label: formatValue(sp.Unit, v)})
	}
	xOf := func(t time.Time) int {
		return plotLeft + int(math.Round(float64(t.Sub(start))/float64(monitorWindow)*plotW))
	}
	for t := start.Truncate(xTickEvery); !t.After(end); t = t.Add(xTickEvery) {
		if t.Before(start) {
			continue
		}
		ch.XTicks = append(ch.XTicks, chartXTick{X: xOf(t), Label: t.UTC().Format("15:04")})
	}
	for i, s := range ss {
		l := chartLine{Name: s.Name, Color: palette[i%len(palette)], Last: "—"}
		var cur []string
		var curDot chartDot
		flush := func() {
			switch len(cur) {
			case 0:
			case 1:
				l.Dots = append(l.Dots, curDot)
			default:
				l.Paths = append(l.Paths, strings.Join(cur, " "))
			}
			cur = cur[:0]
		}
		for j, v := range s.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) || j >= len(s.Times) {
				flush()
				continue
			}
			x, y := xOf(s.Times[j]), plotTop+plotH-int(math.Round(max(v, 0)/top*plotH))
			cur = append(cur, strconv.Itoa(x)+","+strconv.Itoa(y))
			curDot = chartDot{X: x, Y: y}
			l.Last = formatValue(sp.Unit, v)
		}
		flush()
		ch.Lines = append(ch.Lines, l)
	}
	return ch
}
