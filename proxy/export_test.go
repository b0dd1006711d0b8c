package proxy

// Held reports how many blackholed clients the proxy is holding now.
func (p *Proxy) Held() int { return int(p.holding.Load()) }
