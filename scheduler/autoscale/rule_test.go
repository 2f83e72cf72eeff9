package autoscale

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// secs builds one sample per second ending at t0, oldest first, from
// in-flight figures (rate = in-flight).
func secs(inflight ...float64) []Sample {
	out := make([]Sample, len(inflight))
	for i, f := range inflight {
		out[i] = Sample{At: t0.Add(time.Duration(i-len(inflight)+1) * time.Second), Inflight: f, Rate: f}
	}
	return out
}

func TestDecide(t *testing.T) {
	b := Bounds{Min: 0, Max: 4, TargetInflight: 4, ScaleDownDelay: 5 * time.Second, IdleToZero: 60 * time.Second}
	b1 := b
	b1.Min = 1
	recent := t0.Add(-time.Second)
	tests := []struct {
		name   string
		in     Input
		want   int
		reason string // part of the reason
	}{
		{"at zero, idle: stay", Input{Current: 0, Bounds: b, Samples: secs(0, 0), LastRequest: t0.Add(-time.Hour), SinceScale: time.Hour}, 0, "at zero"},
		{"at zero, wake signal: one replica", Input{Current: 0, Bounds: b, Wake: true, SinceScale: time.Hour}, 1, "scale from zero"},
		{"at zero, 9 in flight: ceil(9/4)=3 at once", Input{Current: 0, Bounds: b, Samples: secs(0, 9), LastRequest: recent}, 3, "scale from zero"},
		{"at zero, 100 held: capped at max", Input{Current: 0, Bounds: b, Wake: true, Samples: secs(100), LastRequest: recent}, 4, "scale from zero"},
		{"at zero, rate but nothing in flight now", Input{Current: 0, Bounds: b, Samples: []Sample{{At: t0, Rate: 2}}, LastRequest: recent}, 1, "scale from zero"},
		{"at zero, min 1: raise", Input{Current: 0, Bounds: b1, SinceScale: time.Hour}, 1, "min"},
		{"stale sample ignored at zero", Input{Current: 0, Bounds: b, Samples: []Sample{{At: t0.Add(-10 * time.Second), Inflight: 8}}, SinceScale: time.Hour, LastRequest: t0.Add(-time.Hour)}, 0, "at zero"},
		{"up at once: 13 in flight on 1 → 4 (capped)", Input{Current: 1, Bounds: b, Samples: secs(1, 13), SinceScale: 0, LastRequest: recent}, 4, "scale up"},
		{"up at once right after a change", Input{Current: 1, Bounds: b, Samples: secs(6), SinceScale: 100 * time.Millisecond, LastRequest: recent}, 2, "scale up"},
		{"exactly at target stays", Input{Current: 2, Bounds: b, Samples: secs(8, 8, 8, 8, 8, 8), SinceScale: time.Minute, LastRequest: recent}, 2, "steady"},
		{"down waits for the delay after a change", Input{Current: 4, Bounds: b, Samples: secs(0, 0, 0), SinceScale: 3 * time.Second, LastRequest: recent}, 4, "steady"},
		{"down: one high second in the window holds it", Input{Current: 4, Bounds: b, Samples: secs(2, 2, 15, 2, 2, 2), SinceScale: time.Minute, LastRequest: recent}, 4, "steady"},
		{"down after the delay of lower recommendations", Input{Current: 4, Bounds: b, Samples: secs(16, 5, 5, 5, 5, 5, 5), SinceScale: time.Minute, LastRequest: recent}, 2, "scale down"},
		{"down to the floor 1 while not idle", Input{Current: 3, Bounds: b, Samples: secs(0, 0, 0, 0, 0, 0), SinceScale: time.Minute, LastRequest: t0.Add(-10 * time.Second)}, 1, "scale down"},
		{"down to min", Input{Current: 3, Bounds: Bounds{Min: 2, Max: 4, TargetInflight: 4, ScaleDownDelay: 5 * time.Second, IdleToZero: time.Minute}, Samples: secs(0, 0, 0, 0, 0, 0), SinceScale: time.Minute, LastRequest: recent}, 2, "scale down"},
		{"no figures: never down blind", Input{Current: 3, Bounds: b, SinceScale: time.Minute, LastRequest: recent}, 3, "no load figures"},
		{"zero after idle_to_zero", Input{Current: 1, Bounds: b, Samples: secs(0, 0), SinceScale: 2 * time.Minute, LastRequest: t0.Add(-61 * time.Second)}, 0, "scale to zero"},
		{"zero skips the down delay (idle is its own delay)", Input{Current: 3, Bounds: b, Samples: secs(0), SinceScale: time.Second, LastRequest: t0.Add(-2 * time.Minute)}, 0, "scale to zero"},
		{"not zero while something is in flight", Input{Current: 1, Bounds: b, Samples: secs(0.5), SinceScale: 2 * time.Minute, LastRequest: t0.Add(-2 * time.Minute)}, 1, "steady"},
		{"not zero with min 1", Input{Current: 1, Bounds: b1, Samples: secs(0, 0), SinceScale: time.Hour, LastRequest: t0.Add(-time.Hour)}, 1, "steady"},
		{"not zero before idle_to_zero", Input{Current: 1, Bounds: b, Samples: secs(0, 0), SinceScale: time.Hour, LastRequest: t0.Add(-59 * time.Second)}, 1, "steady"},
		{"no request seen: idle counts from the last change", Input{Current: 1, Bounds: b, Samples: secs(0), SinceScale: 30 * time.Second}, 1, "steady"},
		{"no request seen, change long ago: zero", Input{Current: 1, Bounds: b, Samples: secs(0), SinceScale: 2 * time.Minute}, 0, "scale to zero"},
		{"above max (max lowered): down at once", Input{Current: 7, Bounds: b, Samples: secs(40), SinceScale: 0, LastRequest: recent}, 4, "max"},
		{"below min (min raised): up at once", Input{Current: 1, Bounds: Bounds{Min: 3, Max: 4, TargetInflight: 4, ScaleDownDelay: time.Minute, IdleToZero: time.Minute}, Samples: secs(0), LastRequest: recent}, 3, "floor"},
		{"defaults fill zero fields", Input{Current: 1, Bounds: Bounds{Max: 10}, Samples: secs(17), LastRequest: recent}, 5, "scale up"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Now = t0
			d := Decide(tt.in)
			if d.Replicas != tt.want || !strings.Contains(d.Reason, tt.reason) {
				t.Fatalf("Decide = %d %q, want %d (%q)", d.Replicas, d.Reason, tt.want, tt.reason)
			}
		})
	}
}

// A load that dips below the threshold for less than the delay never
// scales down: one full cycle of a saw-tooth load keeps the count.
func TestNoFlapping(t *testing.T) {
	b := Bounds{Min: 0, Max: 8, TargetInflight: 4, ScaleDownDelay: 10 * time.Second, IdleToZero: time.Minute}
	cur, changes := 1, 0
	lastChange := t0
	var samples []Sample
	for i := 0; i < 120; i++ {
		now := t0.Add(time.Duration(i) * time.Second)
		inflight := 15.0 // needs 4
		if i%8 >= 4 {
			inflight = 3 // needs 1, for 4 s out of every 8
		}
		samples = append(samples, Sample{At: now, Inflight: inflight, Rate: inflight})
		d := Decide(Input{Now: now, Current: cur, Bounds: b, Samples: samples, SinceScale: now.Sub(lastChange), LastRequest: now})
		if d.Replicas != cur {
			changes++
			cur, lastChange = d.Replicas, now
		}
	}
	if changes != 1 || cur != 4 {
		t.Fatalf("%d changes, ending at %d: want one scale-up to 4 and no flapping", changes, cur)
	}
}

func TestBoundsValidate(t *testing.T) {
	ok := Bounds{Min: 0, Max: 4}.WithDefaults()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, b := range []Bounds{
		{Min: 0, Max: 0}, {Min: 5, Max: 4}, {Min: -1, Max: 4}, {Max: 101},
		{Max: 4, TargetInflight: -1}, {Max: 4, ScaleDownDelay: time.Millisecond}, {Max: 4, IdleToZero: -time.Second},
	} {
		if err := b.WithDefaults().Validate(); err == nil {
			t.Errorf("%+v accepted", b)
		}
	}
}
