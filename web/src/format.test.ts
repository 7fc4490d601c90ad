import { describe, expect, it } from "vitest";
import { limits } from "./format";

describe("limits", () => {
  it("reads as a phrase", () => {
    expect(limits({ minute: 60, hour: 1000, day: 10000 })).toBe(
      "60 a minute, 1,000 an hour, 10,000 a day",
    );
  });
});
