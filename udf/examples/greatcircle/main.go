// Command greatcircle is an example teatree user function, a map: it adds
// the great-circle distance in kilometres between two points (haversine
// formula on a sphere of radius 6371.0088 km, the IUGG mean Earth radius)
// to every row. Params (all optional): lat1, lon1, lat2, lon2 name the
// input columns in degrees (default those names), as names the new
// float64 column (default distance_km). A null coordinate gives a null
// distance.
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o greatcircle.wasm ./udf/examples/greatcircle
package main

import (
	"encoding/json"
	"math"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/teatree/teatree/udf/sdk"
)

// earthRadiusKm is the IUGG mean Earth radius.
const earthRadiusKm = 6371.0088

type params struct {
	Lat1 string `json:"lat1"`
	Lon1 string `json:"lon1"`
	Lat2 string `json:"lat2"`
	Lon2 string `json:"lon2"`
	As   string `json:"as"`
}

func init() { sdk.Handle(distance) }

func main() {}

func distance(rec arrow.RecordBatch, raw json.RawMessage) ([]arrow.RecordBatch, error) {
	p := params{Lat1: "lat1", Lon1: "lon1", Lat2: "lat2", Lon2: "lon2", As: "distance_km"}
	if err := sdk.Params(raw, &p); err != nil {
		return nil, err
	}
	var cols [4][]float64
	var arrs [4]arrow.Array
	for i, name := range []string{p.Lat1, p.Lon1, p.Lat2, p.Lon2} {
		a, err := sdk.Column(rec, name)
		if err != nil {
			return nil, err
		}
		if cols[i], err = sdk.Float64s(a); err != nil {
			return nil, err
		}
		arrs[i] = a
	}
	// Plain slices, no builder: under Go's wasm backend a builder's
	// Append per row is the batch's main cost.
	var valid []bool // nil: no nulls
	for _, a := range arrs {
		v := sdk.Valid(a)
		switch {
		case v == nil:
		case valid == nil:
			valid = v
		default:
			for r := range valid {
				valid[r] = valid[r] && v[r]
			}
		}
	}
	dist := make([]float64, rec.NumRows())
	for r := range dist {
		// A null row's value is computed from undefined inputs and
		// masked by valid.
		dist[r] = Haversine(cols[0][r], cols[1][r], cols[2][r], cols[3][r])
	}
	col := sdk.Float64Array(dist, valid)
	defer col.Release()
	return []arrow.RecordBatch{sdk.With(rec, arrow.Field{Name: p.As, Type: arrow.PrimitiveTypes.Float64, Nullable: true}, col)}, nil
}

// Haversine is the great-circle distance in km between two points given
// in degrees.
func Haversine(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	dLat, dLon := (lat2-lat1)*rad, (lon2-lon1)*rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthRadiusKm * math.Asin(math.Sqrt(a))
}
