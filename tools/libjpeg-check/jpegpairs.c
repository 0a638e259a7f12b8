/* Writes JPEGs with libjpeg(-turbo)'s compressor in many configurations and, next to each, the RGB that
 * libjpeg's decompressor gives with its defaults (JDCT_ISLOW, fancy upsampling, out_color_space JCS_RGB) —
 * what PIL's Image.open(f).convert("RGB") returns. Used by JpegDecoderTests.MatchesSystemLibjpeg
 * (LLAMA4_LIBJPEG_PAIRS=dir). Build: gcc -O2 -o jpegpairs jpegpairs.c -ljpeg; run: ./jpegpairs DIR
 * Output: DIR/NAME.jpg and DIR/NAME.rgb (int32 LE width, height, then height*width*3 bytes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <jpeglib.h>

static unsigned char *picture(int w, int h, int seed) {
  unsigned char *p = malloc((size_t)w * h * 3);
  srand(seed);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      double fx = w == 1 ? 0.5 : x / (double)(w - 1), fy = h == 1 ? 0.5 : y / (double)(h - 1);
      double disc = exp(-((fx - 0.4) * (fx - 0.4) + (fy - 0.6) * (fy - 0.6)) * 8);
      int edge = ((x / 5 + y / 7) & 1) * 40;   /* hard edges so the IDCT's clipping and AC terms matter */
      int v[3] = { (int)(40 + 170 * fx) + edge, (int)(60 + 150 * disc), (int)(200 - 150 * fy) - edge };
      for (int c = 0; c < 3; c++) {
        int n = v[c] + rand() % 31 - 15;
        p[((size_t)y * w + x) * 3 + c] = n < 0 ? 0 : n > 255 ? 255 : n;
      }
    }
  return p;
}

/* Damage applied after encoding: 0 none; 1 cut at 55%; 2 delete the 3rd RST marker; 3, 4, 5: renumber it by +3, +1, -1
 * (libjpeg's resync actions 1, 3, 2); 6 cut at 55% with restarts; 7 overwrite 16 bytes mid-scan with random data; 8 a run of stuffed 0xFF bytes
 * (all-ones bits, which no Huffman code is: libjpeg's bad-code path). */
static void damage(unsigned char *b, unsigned long *len, int mutate) {
  if (mutate == 1 || mutate == 6) { *len = *len * 55 / 100; return; }
  if (mutate == 7) { srand(99); for (unsigned long i = *len / 2; i < *len / 2 + 16; i++) b[i] = rand() & 0xFF; return; }
  if (mutate == 8) { for (unsigned long i = *len / 2; i < *len / 2 + 64; i += 2) { b[i] = 0xFF; b[i + 1] = 0; } return; }   /* all-ones: bad Huffman codes */
  int seen = 0;
  for (unsigned long i = 0; i + 1 < *len; i++)
    if (b[i] == 0xFF && b[i + 1] >= 0xD0 && b[i + 1] <= 0xD7 && ++seen == 3) {
      int n = b[i + 1] - 0xD0;
      if (mutate == 2) { memmove(b + i, b + i + 2, *len - i - 2); *len -= 2; }
      else b[i + 1] = 0xD0 + ((n + (mutate == 3 ? 3 : mutate == 4 ? 1 : -1)) & 7);
      return;
    }
}

static void pair(const char *dir, const char *name, int w, int h, int grey, int rgb, int hs, int vs, int chs, int cvs,
                 int quality, int baseline, int restart, int optimize, int progressive, int mutate) {
  char path[4096];
  unsigned char *src = picture(w, h, w * 31 + h);
  struct jpeg_compress_struct c; struct jpeg_error_mgr e1;
  c.err = jpeg_std_error(&e1); jpeg_create_compress(&c);
  unsigned char *jbuf = NULL; unsigned long jlen = 0;
  jpeg_mem_dest(&c, &jbuf, &jlen);
  c.image_width = w; c.image_height = h; c.input_components = 3; c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  if (grey) jpeg_set_colorspace(&c, JCS_GRAYSCALE);
  if (rgb) jpeg_set_colorspace(&c, JCS_RGB);
  jpeg_set_quality(&c, quality, baseline);
  c.comp_info[0].h_samp_factor = hs; c.comp_info[0].v_samp_factor = vs;
  if (!grey) for (int i = 1; i < 3; i++) { c.comp_info[i].h_samp_factor = chs; c.comp_info[i].v_samp_factor = cvs; }
  c.restart_interval = restart; c.optimize_coding = optimize;
  if (progressive) jpeg_simple_progression(&c);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) { JSAMPROW row = src + (size_t)c.next_scanline * w * 3; jpeg_write_scanlines(&c, &row, 1); }
  jpeg_finish_compress(&c); jpeg_destroy_compress(&c);
  damage(jbuf, &jlen, mutate);
  snprintf(path, sizeof path, "%s/%s.jpg", dir, name);
  FILE *f = fopen(path, "wb"); fwrite(jbuf, 1, jlen, f); fclose(f);

  struct jpeg_decompress_struct d; struct jpeg_error_mgr e2;
  d.err = jpeg_std_error(&e2); jpeg_create_decompress(&d);
  jpeg_mem_src(&d, jbuf, jlen);
  jpeg_read_header(&d, TRUE);
  d.out_color_space = JCS_RGB;   /* grey too: (g,g,g), as PIL's convert("RGB") */
  jpeg_start_decompress(&d);
  unsigned char *out = malloc((size_t)w * h * 3);
  while (d.output_scanline < d.output_height) { JSAMPROW row = out + (size_t)d.output_scanline * w * 3; jpeg_read_scanlines(&d, &row, 1); }
  jpeg_finish_decompress(&d); jpeg_destroy_decompress(&d);
  snprintf(path, sizeof path, "%s/%s.rgb", dir, name);
  f = fopen(path, "wb"); int hdr[2] = { w, h }; fwrite(hdr, 4, 2, f); fwrite(out, 1, (size_t)w * h * 3, f); fclose(f);
  free(out); free(src); free(jbuf);
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: jpegpairs DIR\n"); return 2; }
  const char *dir = argv[1];
  int sizes[][2] = { {1, 1}, {2, 3}, {3, 2}, {5, 7}, {8, 8}, {9, 17}, {17, 9}, {31, 33}, {64, 48}, {201, 149}, {640, 480} };
  struct { const char *n; int grey, rgb, hs, vs, chs, cvs; } samp[] = {
    {"444", 0, 0, 1, 1, 1, 1}, {"422", 0, 0, 2, 1, 1, 1}, {"420", 0, 0, 2, 2, 1, 1}, {"440", 0, 0, 1, 2, 1, 1},
    {"411", 0, 0, 4, 1, 1, 1}, {"410", 0, 0, 4, 2, 1, 1}, {"422v2", 0, 0, 2, 2, 1, 2}, {"grey", 1, 0, 1, 1, 1, 1},
    {"grey22", 1, 0, 2, 2, 1, 1}, {"rgb", 0, 1, 1, 1, 1, 1}, {"rgb420", 0, 1, 2, 2, 1, 1},
  };
  char name[256]; int n = 0;
  for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
    for (size_t k = 0; k < sizeof samp / sizeof *samp; k++) {
      int q = (s + k) % 3 == 0 ? 50 : (s + k) % 3 == 1 ? 75 : 95;
      snprintf(name, sizeof name, "%s_%dx%d_q%d", samp[k].n, sizes[s][0], sizes[s][1], q);
      pair(dir, name, sizes[s][0], sizes[s][1], samp[k].grey, samp[k].rgb, samp[k].hs, samp[k].vs, samp[k].chs, samp[k].cvs, q, 1, 0, 0, 0, 0); n++;
    }
  /* entropy and quantisation variants on a mid size */
  int restarts[] = { 1, 2, 7 };
  for (int r = 0; r < 3; r++) {
    snprintf(name, sizeof name, "420_201x149_rst%d", restarts[r]);
    pair(dir, name, 201, 149, 0, 0, 2, 2, 1, 1, 80, 1, restarts[r], 0, 0, 0); n++;
    snprintf(name, sizeof name, "grey_99x37_rst%d", restarts[r]);
    pair(dir, name, 99, 37, 1, 0, 1, 1, 1, 1, 80, 1, restarts[r], 0, 0, 0); n++;
  }
  pair(dir, "420_201x149_optimized", 201, 149, 0, 0, 2, 2, 1, 1, 85, 1, 0, 1, 0, 0); n++;
  pair(dir, "444_120x90_q100", 120, 90, 0, 0, 1, 1, 1, 1, 100, 1, 0, 0, 0, 0); n++;
  pair(dir, "420_120x90_q3_16bit", 120, 90, 0, 0, 2, 2, 1, 1, 3, 0, 0, 0, 0, 0); n++;   /* quantisers > 255: 16-bit DQT, SOF1 */
  pair(dir, "420_120x90_q1_16bit", 120, 90, 0, 0, 2, 2, 1, 1, 1, 0, 0, 1, 0, 0); n++;
  pair(dir, "420_120x90_progressive", 120, 90, 0, 0, 2, 2, 1, 1, 75, 1, 0, 0, 1, 0); n++;   /* not ours: stb */
  /* damaged files: libjpeg warns, pads with zeros, resynchronises; its output is the reference */
  for (int m = 1; m <= 8; m++) {
    snprintf(name, sizeof name, "damaged%d_420_201x149", m);
    pair(dir, name, 201, 149, 0, 0, 2, 2, 1, 1, 80, 1, m == 1 ? 0 : 2, 0, 0, m); n++;
    snprintf(name, sizeof name, "damaged%d_grey_99x37", m);
    pair(dir, name, 99, 37, 1, 0, 1, 1, 1, 1, 80, 1, m == 1 ? 0 : 1, 0, 0, m); n++;
  }
  printf("%d pairs in %s (libjpeg %d)\n", n, dir, JPEG_LIB_VERSION);
  return 0;
}
