package apiserver

import (
	"sort"
	"strconv"
	"time"
)

// The usage chart is inline SVG drawn by the server: one chart per account,
// a stacked bar per day with a segment per model, plus the same numbers as
// a table for screen readers and for copying.

const usageDays = 30

// chart geometry, in SVG user units
const (
	chartW, chartH        = 760, 240
	plotLeft, plotTop     = 64, 12
	plotRight, plotBottom = 12, 40
	plotW                 = chartW - plotLeft - plotRight
	plotH                 = chartH - plotTop - plotBottom
	barGap                = 3
	chartLabelEvery       = 5
)

// palette is Okabe and Ito's, distinguishable with the common colour blindnesses.
var palette = []string{"#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"}

type usageChart struct {
	ID            string
	Account       string
	Total         int64
	Width, Height int
	PlotX, PlotY  int
	PlotW, PlotH  int
	PlotBottom    int
	Ticks         []chartTick
	Days          []chartDay
	Legend        []chartSeries
	Table         []UsageRow
}

type chartSeries struct {
	Model, Color string
	Total        int64
}

type chartDay struct {
	Day      string
	X, W     int
	Label    string // shown under every fifth bar
	LabelX   int
	Total    int64
	Segments []chartSeg
}

type chartSeg struct {
	Y, H         int
	Color, Title string
}

type chartTick struct {
	Y     int
	Label string
}

// niceCeil rounds n up to 1, 2 or 5 times a power of ten.
func niceCeil(n int64) int64 {
	if n <= 1 {
		return 1
	}
	p := int64(1)
	for p*10 <= n {
		p *= 10
	}
	for _, m := range []int64{1, 2, 5, 10} {
		if m*p >= n {
			return m * p
		}
	}
	return 10 * p
}

// buildUsageCharts lays out rows (any order) over the usageDays days from first.
func buildUsageCharts(rows []UsageRow, first time.Time) []usageChart {
	days := make([]string, usageDays)
	dayIdx := map[string]int{}
	for i := range days {
		days[i] = first.AddDate(0, 0, i).Format(time.DateOnly)
		dayIdx[days[i]] = i
	}
	byAccount := map[string][]UsageRow{}
	var accounts []string
	for _, r := range rows {
		if _, ok := dayIdx[r.Day]; !ok {
			continue
		}
		if _, ok := byAccount[r.Account]; !ok {
			accounts = append(accounts, r.Account)
		}
		byAccount[r.Account] = append(byAccount[r.Account], r)
	}
	sort.Strings(accounts)
	charts := make([]usageChart, 0, len(accounts))
	for n, acc := range accounts {
		rs := byAccount[acc]
		sort.Slice(rs, func(i, j int) bool {
			if rs[i].Day != rs[j].Day {
				return rs[i].Day < rs[j].Day
			}
			return rs[i].Model < rs[j].Model
		})
		ch := usageChart{ID: "usage-chart-" + strconv.Itoa(n+1), Account: acc, Width: chartW, Height: chartH,
			PlotX: plotLeft, PlotY: plotTop, PlotW: plotW, PlotH: plotH, PlotBottom: plotTop + plotH, Table: rs}
		// series in model order, each with its colour
		color := map[string]string{}
		totals := map[string]int64{}
		perDay := make([]map[string]int64, usageDays)
		for _, r := range rs {
			if _, ok := color[r.Model]; !ok {
				color[r.Model] = ""
				ch.Legend = append(ch.Legend, chartSeries{Model: r.Model})
			}
			i := dayIdx[r.Day]
			if perDay[i] == nil {
				perDay[i] = map[string]int64{}
			}
			perDay[i][r.Model] += r.Requests
			totals[r.Model] += r.Requests
			ch.Total += r.Requests
		}
		sort.Slice(ch.Legend, func(i, j int) bool { return ch.Legend[i].Model < ch.Legend[j].Model })
		for i := range ch.Legend {
			ch.Legend[i].Color = palette[i%len(palette)]
			ch.Legend[i].Total = totals[ch.Legend[i].Model]
			color[ch.Legend[i].Model] = ch.Legend[i].Color
		}
		var peak int64
		for _, m := range perDay {
			var t int64
			for _, v := range m {
				t += v
			}
			peak = max(peak, t)
		}
		top := niceCeil(peak)
		steps := min(top, 5) // 1, 2 or 5 times a power of ten splits into round fifths
		for k := int64(0); k <= steps; k++ {
			v := top * k / steps
			ch.Ticks = append(ch.Ticks, chartTick{Y: plotTop + plotH - int(v*plotH/top), Label: strconv.FormatInt(v, 10)})
		}
		slot := plotW / usageDays
		for i, d := range days {
			cd := chartDay{Day: d, X: plotLeft + i*slot + barGap/2, W: slot - barGap, LabelX: plotLeft + i*slot + slot/2}
			if i%chartLabelEvery == 0 || i == usageDays-1 {
				cd.Label = d[5:] // MM-DD
			}
			// stack by cumulative height, so rounding never leaves gaps
			y, stacked := plotTop+plotH, 0
			for _, s := range ch.Legend {
				v := perDay[i][s.Model]
				if v == 0 {
					continue
				}
				cd.Total += v
				h := max(int((cd.Total*plotH+top/2)/top)-stacked, 1)
				stacked += h
				y -= h
				cd.Segments = append(cd.Segments, chartSeg{Y: y, H: h, Color: s.Color,
					Title: d + " " + s.Model + ": " + strconv.FormatInt(v, 10) + " requests"})
			}
			ch.Days = append(ch.Days, cd)
		}
		charts = append(charts, ch)
	}
	return charts
}
