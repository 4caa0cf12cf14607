// Builds the console into the Python package (qwen3_api/api/console/static), served at /console by `serve`.
// The output is committed, so `pip install` needs no Node; CI rebuilds it and checks it is the same.
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

export default defineConfig({
  base: "/console/",
  plugins: [react()],
  build: {
    outDir: process.env.CONSOLE_OUT_DIR ?? "../qwen3_api/api/console/static",
    emptyOutDir: true,
    // One script and one stylesheet, no inline code: the page's CSP allows only 'self'.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 700,
  },
  server: { proxy: { "/admin": "http://127.0.0.1:8000", "/v1": "http://127.0.0.1:8000",
                     "/console/api": "http://127.0.0.1:8000" } },
});
