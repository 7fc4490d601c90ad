/// <reference types="vitest/config" />
import preact from "@preact/preset-vite";
import { defineConfig } from "vite";

// The build goes inside the Python package (gitignored), where Forecourt serves it:
// index.html at the app's paths, every other file under /static/ with a content hash.
const outDir = "../src/forecourt/dashboard/dist";

export default defineConfig({
  plugins: [preact({ devtoolsInProd: false, prefreshEnabled: false })],
  base: "/",
  build: {
    outDir,
    emptyOutDir: true,
    assetsDir: "static",
    // No data: URLs for scripts or fonts: every file is a separate, hashed, cacheable file.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: "es2022",
  },
  server: {
    proxy: {
      "/api": "http://127.0.0.1:8000",
      "/ws": { target: "ws://127.0.0.1:8000", ws: true },
    },
  },
  test: {
    environment: "node",
    include: ["src/**/*.test.ts"],
  },
});
