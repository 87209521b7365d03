// Pages of printed text for the OCR chain: the phrases the OCR tests read back, rendered with
// TrueType fonts (Debian's fonts-dejavu-core) in several faces and sizes. `loom bench chain`
// times them beside the text images of data/.
#ifndef LOOM_BENCH_TEXT_PAGES_H_
#define LOOM_BENCH_TEXT_PAGES_H_

#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace loom::bench {

// Short lines of words and numbers (24 of them).
const std::vector<std::string>& SamplePhrases();

// A white page with one phrase per line; line i is set in face (i + variant) % 5 of DejaVu Sans,
// Serif, Sans Mono, Sans Bold and Serif Bold, at 22, 28, 34 or 40 pixels ((i + variant) % 4), and
// indented by 0, 40 or 80 pixels. NotFound names a missing font file.
absl::StatusOr<cv::Mat> RenderTextPage(
    const std::vector<std::string>& phrases, int variant = 0,
    const std::string& font_dir = "/usr/share/fonts/truetype/dejavu");

}  // namespace loom::bench

#endif  // LOOM_BENCH_TEXT_PAGES_H_
