package testbed

import (
	"encoding/json"
	"net/http"
	"strings"
)

// prices are the fake price API's quotes: ETH and SNT on Chaos Unicorn Day
// 2019, roughly.
var prices = map[string]map[string]float64{
	"ETH": {"USD": 142.52, "EUR": 126.91, "BTC": 0.0347},
	"SNT": {"USD": 0.0301, "EUR": 0.0268, "ETH": 0.000211},
}

// Prices returns a fake CryptoCompare price API (min-api.cryptocompare.com,
// the wallet's price source): GET /data/price?fsym=ETH&tsyms=USD,EUR
// answers {"USD":142.52,"EUR":126.91}. An unknown symbol gets the API's
// error shape, {"Response":"Error","Message":...}, with status 200 as the
// real one does; other paths 404.
func Prices() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /data/price", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		q := r.URL.Query()
		quotes, ok := prices[strings.ToUpper(q.Get("fsym"))]
		if !ok {
			json.NewEncoder(w).Encode(map[string]string{
				"Response": "Error", "Message": "There is no data for the symbol " + q.Get("fsym") + " .",
			})
			return
		}
		out := map[string]float64{}
		for _, t := range strings.Split(q.Get("tsyms"), ",") {
			if v, ok := quotes[strings.ToUpper(strings.TrimSpace(t))]; ok {
				out[strings.ToUpper(strings.TrimSpace(t))] = v
			}
		}
		json.NewEncoder(w).Encode(out)
	})
	return mux
}
