package console

import (
	"fmt"
	"html/template"
	"math"
	"strings"
)

// point is one value of a plot: x is the version number.
type point struct{ X, Y float64 }

// Plot geometry in SVG user units.
const (
	plotW, plotH           = 480, 180
	padL, padR, padT, padB = 64, 12, 24, 28
)

// svgPlot draws points as an inline SVG line chart with labelled axes; an
// empty series draws the frame and "no data". label formats y values.
func svgPlot(id, title string, pts []point, label func(float64) string) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="plot" id="plot-%s" viewBox="0 0 %d %d" role="img" aria-label="%s">`, template.HTMLEscapeString(id), plotW, plotH, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<text x="%d" y="16" class="title">%s</text>`, padL, template.HTMLEscapeString(title))
	x0, x1, y0, y1 := float64(padL), float64(plotW-padR), float64(plotH-padB), float64(padT)
	fmt.Fprintf(&b, `<path class="axis" d="M%.0f %.0f V%.0f H%.0f"/>`, x0, y1, y0, x1)
	if len(pts) == 0 {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="empty">no data</text></svg>`, (x0+x1)/2-24, (y0+y1)/2)
		return template.HTML(b.String())
	}
	minX, maxX, maxY := pts[0].X, pts[0].X, 0.0
	for _, p := range pts {
		minX, maxX, maxY = math.Min(minX, p.X), math.Max(maxX, p.X), math.Max(maxY, p.Y)
	}
	if maxX == minX {
		minX, maxX = minX-1, maxX+1
	}
	if maxY == 0 {
		maxY = 1
	}
	sx := func(x float64) float64 { return x0 + (x-minX)/(maxX-minX)*(x1-x0) }
	sy := func(y float64) float64 { return y0 - y/maxY*(y0-y1) }
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="ylab">%s</text>`, x0-4, y1+4, template.HTMLEscapeString(label(maxY)))
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="ylab">%s</text>`, x0-4, y0, template.HTMLEscapeString(label(0)))
	fmt.Fprintf(&b, `<text x="%.0f" y="%d" class="xlab">v%.0f</text>`, x0, plotH-8, minX)
	fmt.Fprintf(&b, `<text x="%.0f" y="%d" class="xlab end">v%.0f</text>`, x1, plotH-8, maxX)
	b.WriteString(`<polyline class="line" points="`)
	for i, p := range pts {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", sx(p.X), sy(p.Y))
	}
	b.WriteString(`"/>`)
	for _, p := range pts {
		fmt.Fprintf(&b, `<circle class="dot" cx="%.1f" cy="%.1f" r="3"><title>v%.0f: %s</title></circle>`, sx(p.X), sy(p.Y), p.X, template.HTMLEscapeString(label(p.Y)))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
