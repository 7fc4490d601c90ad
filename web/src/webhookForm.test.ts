import { describe, expect, it } from "vitest";
import { headerLines, parseHeaders, patternList } from "./webhookForm";

describe("webhook form", () => {
  it("reads headers as Name: value lines", () => {
    expect(parseHeaders("X-A: 1\n\n X-B:two:three ")).toEqual({
      headers: { "X-A": "1", "X-B": "two:three" },
      bad: null,
    });
    expect(parseHeaders("nonsense").bad).toContain("nonsense");
    expect(headerLines({ "X-A": "1" })).toBe("X-A: 1");
  });

  it("reads patterns separated by lines or commas", () => {
    expect(patternList("a.*, b.c\n\n d")).toEqual(["a.*", "b.c", "d"]);
  });
});
